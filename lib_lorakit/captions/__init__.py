"""Caption files: reading and writing them with an undo history, tag operations, and the caption audit."""
