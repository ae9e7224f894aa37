"""The kernels: pure, jit-able functions of arrays, below the package's validated public face.

Modules here import only each other (and the leaf helpers ``sdtheory._validation`` and ``sdtheory._x64``), in this
order: ``spectral``, ``losses``, ``rules`` (the tie rule and the top-1/top-2 masks), ``closed`` (every linearised form),
``exact`` (the softmax solver and the chain of rounds), ``block``, ``pll`` (the PLL pipeline), ``reduced`` (the block
model on label types). Nothing here checks its arguments: the public modules of :mod:`sdtheory` do, once, and then call
in.
"""
