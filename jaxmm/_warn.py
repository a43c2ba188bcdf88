"""jaxmm's warnings, attributed to the line that called jaxmm: the first frame outside the
package (and the context-manager wrappers it passes through), however deep inside it the
warning arises, so that one ``stacklevel`` per call site cannot go stale as code moves."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_WRAPPERS = {contextlib.__file__}  # @small_pages() and other context-manager decorators


def warn(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` at the caller of jaxmm."""
    frame, level = sys._getframe(1), 2  # 2: warn's caller, as warnings.warn counts
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename in _WRAPPERS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
