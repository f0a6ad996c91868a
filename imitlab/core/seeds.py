"""The seed ranges, defined once: each use of the simulator draws from its own range, so nothing leaks.

Demonstrations use seeds from 0 (``imitlab record --seed-start``), DAgger's own rollouts from 200_000,
training-time validation rollouts from 500_000 and held-out evaluation from 1_000_000 (``imitlab eval``
refuses seeds a policy was trained on).

Town-v0's ``town`` kwarg is a layout seed too: policies are trained in ``TRAINING_TOWN`` and the town benchmark's
"new town" conditions drive ``HELD_OUT_TOWN``, a layout no demonstration came from. (Its weathers split the same
way: ``imitlab.envs.town.weather.GROUPS``, ``train`` and ``test``.)
"""

#: First seed of recorded demonstrations (episode i uses seed DEMO_SEED_START + i).
DEMO_SEED_START = 0
#: First seed of DAgger's rollouts (policy in control, expert labels).
DAGGER_SEED_START = 200_000
#: First seed of the closed-loop validation during training (chooses the checkpoint).
VALIDATION_SEED_START = 500_000
#: First seed of held-out evaluation and the deployment gate.
HELD_OUT_SEED_START = 1_000_000

#: Town-v0 layout seed of demonstrations and training (the env's default ``town``).
TRAINING_TOWN = 0
#: Town-v0 layout seed held out for testing: the town benchmark's "new town".
HELD_OUT_TOWN = 1
