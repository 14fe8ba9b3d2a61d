"""The pipeline's steps: one module per DVC stage (= `raincast` command = Airflow task id).

Each module holds a pure core (data and typed params in, data or metrics out) and a
``run(settings, params)`` that loads the inputs from `raincast.catalog`, calls the core and
saves the outputs. A step's heavy libraries (MLflow, Evidently, scikit-learn) are imported
inside ``run``: every stage is its own process under `dvc repro`.
"""
