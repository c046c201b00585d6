// Golden tests for msg::ipc (to be written).
