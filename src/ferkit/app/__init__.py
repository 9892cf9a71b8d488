"""The web app (`ferkit app`): main.py lays out the page with Streamlit; photos.py, live.py, about.py and
common.py decide everything, over plain data, without importing Streamlit."""
