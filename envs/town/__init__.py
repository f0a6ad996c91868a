"""Town-v0: urban driving by route command through a procedural town with junctions, lights and traffic."""
