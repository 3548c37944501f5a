"""mhp-replay: the reference model of Linux memory hotplug, the replayer and its reports."""

from replay import build as build  # first: it decides which build of the model the imports below load
