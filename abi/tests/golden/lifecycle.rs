// Golden tests for msg::lifecycle (to be written).
