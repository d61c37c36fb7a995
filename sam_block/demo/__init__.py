"""The offline demo: generated scenes of shapes and a toy SAM 2 trained on them.

``scenes`` draws the pictures (with their ground-truth masks), ``train`` trains the
``demo`` model (``python -m sam_block.demo.train``), ``run`` is ``sam-block demo``.
"""
