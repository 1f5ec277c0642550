"""The parity tier reports its largest relative error, the figure the README quotes."""


def pytest_terminal_summary(terminalreporter):
    import relative_error

    if relative_error.ERRORS:
        what, error = max(relative_error.ERRORS, key=lambda e: e[1])
        terminalreporter.write_line(
            f"parity: largest relative error of {len(relative_error.ERRORS)} comparisons {error:.2e} ({what})"
        )
