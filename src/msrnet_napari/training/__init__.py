"""Training code for MSR-net models (needs the ``train`` extra: torch, scikit-image).

Everything that imports torch or serves training only lives here; nothing on the
enhancement path imports this package.

* :mod:`.model` - the PyTorch reference MSR-net, ``save_checkpoint``, ``init_weights``
* :mod:`.train` - photo trainer (``msrnet-train``)
* :mod:`.train_microscopy`, :mod:`.microscopy_data` - microscopy trainer
  (``msrnet-train-microscopy``) and its training pairs
* :mod:`.degrade` - synthetic low light; :mod:`.data` - photo training data
* :mod:`.data_pack` - data packs for the GPU machine; :mod:`.average` - checkpoint averaging
* :mod:`.baselines`, :mod:`.metrics` - classical enhancers and PSNR/SSIM for evaluation
"""
