"""Packaging for OctoPrint-SafePause, built on OctoPrint's own setuptools helpers.

pip builds in an isolated environment that has only pyproject.toml's build requirements (setuptools,
wheel, OctoPrint-Setuptools), never OctoPrint itself: nothing here may import `octoprint`.
"""

import setuptools

try:
    import octoprint_setuptools
except ImportError:
    print(
        "Could not import OctoPrint's setuptools, are you sure you are running that under "
        "the same python installation that OctoPrint is installed under?"
    )
    import sys

    sys.exit(-1)

plugin_identifier = "safepause"
plugin_package = "octoprint_safepause"
plugin_name = "OctoPrint-SafePause"
# The only copy of the version: OctoPrint reads it from the installed distribution's metadata.
plugin_version = "0.1.0"
plugin_description = (
    "Pause a print safely (park away from the part, exact state) and resume it exactly where it stopped"
)
plugin_author = "OctoPrint-SafePause developers"
plugin_author_email = "safepause@example.invalid"
# The only copy of the project address (extras/safepause.md must match it). The hosting is not decided
# yet: a reserved .invalid placeholder, so that no one mistakes it for a real repository.
plugin_url = "https://example.invalid/OctoPrint-SafePause"
plugin_license = "AGPLv3"
plugin_requires = ["OctoPrint>=1.10.0"]
plugin_additional_data = []
plugin_additional_packages = []
plugin_ignored_packages = []
additional_setup_parameters = {"python_requires": ">=3.9,<4"}

setup_parameters = octoprint_setuptools.create_plugin_setup_parameters(
    identifier=plugin_identifier,
    package=plugin_package,
    name=plugin_name,
    version=plugin_version,
    description=plugin_description,
    author=plugin_author,
    mail=plugin_author_email,
    url=plugin_url,
    license=plugin_license,
    requires=plugin_requires,
    additional_packages=plugin_additional_packages,
    ignored_packages=plugin_ignored_packages,
    additional_data=plugin_additional_data,
)

# A plain top-level merge (the cookiecutter's octoprint.util.dict_merge is not importable at build time);
# the additional parameters are flat keys that create_plugin_setup_parameters does not set.
setup_parameters.update(additional_setup_parameters)

setuptools.setup(**setup_parameters)
