"""Codes shared by both twins of each kernel (compiled and NumPy) and by the Python code that
turns a kernel's status into an exception. The ``.pyx`` files repeat these values as C enums;
``tests/test_pack.py`` and ``tests/test_spec.py`` check that the two copies agree."""

from __future__ import annotations

import numpy as np

# -- pack kernel: status codes, in the order the checks run within one step -------------------
# The first failing (step, code) of the first failing episode is reported.
PACK_OK = 0
PACK_OBS = 1           # obs value not finite after conversion to float32
PACK_REWARD = 2        # reward not finite
PACK_VALUE = 3         # value not finite
PACK_LOGPROB = 4       # logprob not finite
PACK_MASK_VALUE = 5    # dense mask entry not 0/1
PACK_LEGAL_ID = 6      # legal action id outside [0, numActions)
PACK_ACTION_RANGE = 7  # action outside [0, numActions)
PACK_ILLEGAL = 8       # action not legal under its own mask
PACK_ERROR_CODES = (PACK_OK, PACK_OBS, PACK_REWARD, PACK_VALUE, PACK_LOGPROB, PACK_MASK_VALUE,
                    PACK_LEGAL_ID, PACK_ACTION_RANGE, PACK_ILLEGAL)

# -- encode kernel ------------------------------------------------------------------------------
# Kernel kinds: onehot is an ids field with one cell.
KIND_IDS = 1
KIND_MULTI = 2
KIND_BOX = 3
KIND_BINARY = 4
KINDS = (KIND_IDS, KIND_MULTI, KIND_BOX, KIND_BINARY)

LAYOUT_CELL = 0   # each cell's one-hot in turn (gymnasium's MultiDiscrete flatten order)
LAYOUT_PLANE = 1  # all cells of value 0, then all cells of value 1, ...
LAYOUTS = (LAYOUT_CELL, LAYOUT_PLANE)

ERR_OK = 0
ERR_RANGE = 1      # id outside [start, start + n)
ERR_NOT_INT = 2    # float id with a fractional part
ERR_NONFINITE = 3  # box input NaN or infinite
ERR_OVERFLOW = 4   # box value not finite once encoded as float32
ERR_BINARY = 5     # binary value other than 0 or 1
ERROR_CODES = (ERR_OK, ERR_RANGE, ERR_NOT_INT, ERR_NONFINITE, ERR_OVERFLOW, ERR_BINARY)

# One encode plan entry per field: the keys, in this order.
PLAN_ITEMS = ("kind", "off", "size", "cells", "n", "start", "layout", "cell_n", "cell_start",
              "cell_off", "scale", "offset", "low", "high")

# Input dtypes the encode kernels read directly (native byte order); the caller converts the rest.
INPUT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8,
                                           np.uint16, np.uint32, np.uint64, np.float32,
                                           np.float64))
