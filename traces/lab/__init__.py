"""The real-kernel lab: Debian's 6.1 and 6.12 kernels under QEMU (TCG), driven over QMP and a guest agent."""
