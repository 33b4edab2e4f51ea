"""The layer every model family shares: Gaussian posterior terms (:mod:`.gaussian`), the
model base class and its parts (:mod:`.model`, :mod:`.encoder`, :mod:`.likelihoods`),
the collapse-metric primitives (:mod:`.metrics`), model names (:mod:`.spec`), the image
models' options (:mod:`.options`) and the figures' set-up (:mod:`.plotting`).

Nothing here imports a family, the runner or the CLI.
"""
