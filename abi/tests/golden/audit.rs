// Golden tests for msg::audit (to be written).
