"""edgepipe."""
