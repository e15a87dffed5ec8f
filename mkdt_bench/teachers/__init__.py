"""The teacher: the encoder whose representations the methods distil."""
