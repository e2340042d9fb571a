"""The lab: where the program runs on real engines, hosts and datapaths (README "Lab"); never imported by it."""
