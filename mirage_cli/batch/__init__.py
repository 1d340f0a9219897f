"""``mirage batch``: many scenes on a cluster or on local GPUs, one job per scene, surviving preemption."""
