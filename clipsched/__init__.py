"""clip-scheduler for trainers: the torch-free client of the clip scheduler service.

``clipsched.client`` is everything a trainer (Isaac Lab, mjlab, ProtoMotions, MimicKit,
your own) needs to take clips from a scheduler run and report outcomes to it; it imports
neither torch nor the service.
"""
