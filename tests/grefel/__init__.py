"""Package marker: gives this folder's test modules unique import names (test_engine.py, test_losses.py are common basenames)."""
