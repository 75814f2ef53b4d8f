"""The model-family-independent machinery: sites and taps, edits, layers, the engine that runs
a stack with edits and captures, sharding and resumable work."""
