// Golden tests for msg::perms (to be written).
