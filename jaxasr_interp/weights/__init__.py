"""Checkpoint readers and converters into the parameter tree of :mod:`.layout`."""
