"""HLS packaging, renditions and recordings, made once per room from the program feed."""
