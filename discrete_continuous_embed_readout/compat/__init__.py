"""The 0.2.x surface: the selector objects ``get_selector`` returns, the module-level
helper functions, the ``Readout`` methods named as in 0.2.x (a mixin over the
distribution's public parts) and the loading of 0.2.x state dicts. The import path
``discrete_continuous_embed_readout.discrete_continuous_embed_readout`` re-exports it."""
