"""Multi-clip imitation environments: the MuJoCo humanoid and a cheap planar walker."""
