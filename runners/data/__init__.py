"""Datasets, augmentation and the built-in synthetic street scenes.

Submodules: ``labels`` (Cityscapes id tables), ``synth`` (generator and cache),
``source`` (the ``--data`` argument: ``DataSource``, ``parse_data_arg``; torch-free),
``datasets`` (Cityscapes, folder layout, the checks done when data is opened),
``transforms``, ``cache`` (the cache folder and remembered check verdicts), ``decoded``
(the pre-decoded training split), ``workers`` (toolkit errors out of DataLoader workers
unchanged). Import names from their submodule: this package imports nothing, so
``runners.data.synth`` (also run in generator worker processes) never pulls in torch.
"""
