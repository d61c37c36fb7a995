"""``SAM_BLOCK_PRECISION`` and its values, in a module without torch: the CLI's parser offers them
before anything heavy is imported; :mod:`sam_block.runtime.precision` decides with them."""

PRECISION_ENV = "SAM_BLOCK_PRECISION"
PRECISION_CHOICES = ("auto", "fp32", "bf16")
