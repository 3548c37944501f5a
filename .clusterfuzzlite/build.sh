#!/bin/bash -eu
# ClusterFuzzLite / OSS-Fuzz build: every fuzz/*_fuzzer.py becomes a fuzzer, with the seed corpus,
# dictionary and options that `make fuzz-package` produces.
pip3 install .
python3 fuzz/package.py "$OUT"
for fuzzer in fuzz/*_fuzzer.py; do
  compile_python_fuzzer "$fuzzer"
done
