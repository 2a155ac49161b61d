"""Entry point of ``python -m data_pipelines.mvtec_ad`` (see :mod:`data_pipelines.mvtec_ad.cli`)."""

from data_pipelines.mvtec_ad.cli import main

raise SystemExit(main())
