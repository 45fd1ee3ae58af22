"""Training many small models at once, written for one model and mapped over a chunk.

The modules, in the order the data flows through them:

* ``setup.py``: ``TrainSetup``, everything static about one model's training
  (the model's name, the image shape, the shapes of the rows and batches, the
  optimizer's settings), made from the config, the data and the plan by
  ``make_setup``; ``make_optimizer``; ``resolve_backend_choices``.
* ``state.py``: ``TrainState``, one model's training state as a pytree.
* ``one_model.py``: the data on the device (``DeviceData``, ``put_data``) and
  the per-model functions (``init_state``, ``train_epoch``, ``evaluate_model``,
  and ``train_one`` that strings them together).
* ``queries.py``: the deterministic views (mirrors, reflect-padded shifts) the
  scoring pass evaluates each scored image under.
* ``chunk.py``: ``ChunkTrainer``, the per-model functions mapped over a chunk of
  models, sharded over the devices and compiled once per stage.
* ``memory.py``: ``model_footprint_bytes`` and ``auto_models_per_chunk``, how
  many models a chunk can hold.
"""
