"""The rule engine: compile AlertRule specs and evaluate events in event time. Pure, no I/O."""
