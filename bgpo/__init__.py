"""bgpo — Boundary-Guided Policy Optimization for diffusion language models.

One module per concept (see the book's chapter on the package layout):
``model`` (LLaDA), ``tokenizer``, ``diffusion`` (masking, ELBO terms, sampler),
``objectives`` (BGPO, ELBO-based, d1), ``tasks`` (rewards, data), ``sandbox``,
``config``, ``train``, ``evaluate``, ``memory`` (measurement), ``plan`` (memory planner),
``figures`` and ``cli``.
"""

__version__ = "0.1.0"
