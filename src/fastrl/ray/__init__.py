"""Ray Data integration (``pip install "fastrl-batch[ray]"``): :func:`read_dataset` reads fastrl
batches as a ``ray.data.Dataset`` (:mod:`.read`); :func:`export_ray` runs ``fastrl export`` over
Ray tasks (:mod:`.export`)."""

from .read import FastrlDatasource, PartInfo, plan_parts, read_dataset  # noqa: F401
from .export import export_ray  # noqa: F401

__all__ = ["read_dataset", "export_ray", "plan_parts", "FastrlDatasource", "PartInfo"]
