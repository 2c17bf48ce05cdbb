"""The generative study: latent diffusion over frozen JEPA / MAE patch embeddings, then sample-quality metrics.

A frozen encoder turns images into patch tokens, a small VAE and a latent diffusion model learn their
distribution, a decoder maps samples back to images, and the metrics here (Frechet distance, Inception-style
score, k-NN precision / recall, class-histogram distance, memorisation) compare generated and real features of
a named feature network. ``study.run_study`` runs it all, resumably, for several runs (``pjepa gen study``);
the stages are plain functions in a declared order (``pipeline``).

A wing on the public API: it imports only the modules ``tests/test_layering.py`` lists as public (run
directories, configs and presets, data loaders, method loading, the shared diffusion schedule), and no
module outside ``pjepa.studies`` and ``pjepa.cli`` imports it.
"""
