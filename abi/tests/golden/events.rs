// Golden tests for msg::events (to be written).
