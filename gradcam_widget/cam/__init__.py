"""Class activation maps in numpy alone: the formulas (:mod:`.core`) and the registry of
methods (:mod:`.methods`). Importable without Keras, TensorFlow, JAX or PyTorch."""
