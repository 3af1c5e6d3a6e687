"""`make fleet-bench`: a fleet of credhop instances behind haproxy under the installs of many clients
(scripts/fleet_bench.py runs it; one job per module here)."""
