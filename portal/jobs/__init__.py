"""Jobs: the state machine (states.py), push-to-run (launch.py), the job service (service.py)."""
