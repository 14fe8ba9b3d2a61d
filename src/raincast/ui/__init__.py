"""The Streamlit demo UI (`streamlit run src/raincast/ui/app.py`): an HTTP client of the
prediction API, never a model loader."""
