"""jaxmm: generalised linear mixed models in JAX.

float64 is switched on at import: mixed-model likelihoods lose too many digits in
float32 (REML residual sums, log-determinants). Opt out with JAXMM_FLOAT32=1.
"""
import os as _os

import jax as _jax

if _os.environ.get("JAXMM_FLOAT32", "") != "1":
    _jax.config.update("jax_enable_x64", True)

from . import errors
from ._fit import fit
from ._anova import anova
from ._optimize import Status
from ._results import FitOptions, MixedModelResult
from ._batch import BatchResult
from ._crossed_result import CrossedResult
from ._crossed_batch import CrossedBatchResult
from ._params import Params
from ._types import Design
from ._arrays import conditional_modes, design, marginal_loglik, row_order
from ._examples import example_model, fit_example, load_example
from ._dataset import partition_dataset
from ._cache import disable_compilation_cache, enable_by_default as _enable_cache, enable_compilation_cache

# The persistent compilation cache is on unless JAXMM_NO_CACHE=1 (see _cache).
_enable_cache()

__all__ = ["fit", "anova", "MixedModelResult", "CrossedResult", "CrossedBatchResult", "FitOptions", "Status", "BatchResult", "Params", "Design", "design",
           "row_order", "marginal_loglik", "conditional_modes", "errors", "load_example", "example_model", "fit_example",
           "enable_compilation_cache", "disable_compilation_cache", "partition_dataset"]
__version__ = "0.1.0"
