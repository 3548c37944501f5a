"""mhp-replay: the reference model of Linux memory hotplug, the replayer and its reports."""
