"""SLURM jobs for pretraining and evaluation, checked before anything is queued (``toolkit submit``).

- :mod:`toolkit.slurm.resources`: the resource request, its options and sbatch options.
- :mod:`toolkit.slurm.sbatch`: the one place that builds (and runs) sbatch argument lists.
- :mod:`toolkit.slurm.checks`: configs, paths, checkpoints, job arguments, ``sbatch --test-only``.
- :mod:`toolkit.slurm.jobs`: submit pretraining, evaluation and chains (the Python API).
- :mod:`toolkit.slurm.cli`: the ``toolkit submit`` command line.

Templates are in ``slurm/`` at the top of the repository; checkpoints follow :mod:`toolkit.checkpoints`.
"""
