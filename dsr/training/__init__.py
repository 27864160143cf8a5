"""Stage ``dsr train``: trainer loop, checkpoints, optimiser schedule, data loading."""
