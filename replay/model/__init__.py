"""The executable model of the kernel's memory-hotplug zone policy and accounting."""
