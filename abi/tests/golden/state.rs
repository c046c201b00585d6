// Golden tests for msg::state (to be written).
