def main():
    raise SystemExit("o2o: CLI not built yet")
