# One image for every production process; the command picks which:
#   docker run IMAGE                      the API (the default CMD below)
#   docker run IMAGE worker --processes 2 --threads 8
#   docker run IMAGE scheduler
#   docker run IMAGE migrate
#   docker run IMAGE sources create NAME
# Settings come from LIFELINE_* environment variables; see README.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Third-party dependencies first, in their own layer, so a change to the code alone does not
# reinstall them. The list is read from pyproject.toml; versions are pinned by constraints.txt.
COPY pyproject.toml constraints.txt ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.run([sys.executable, '-m', 'pip', 'install', '-c', 'constraints.txt', *deps], check=True)"

# Editable, so the code stays in /app: `lifeline migrate` finds alembic.ini and migrations/
# beside service/.
COPY . .
RUN pip install -c constraints.txt -e .

# The code belongs to root and is read-only for the user the processes run as; only the
# outbox of the local providers is theirs to write.
RUN useradd --system --uid 10001 --user-group --no-create-home lifeline \
    && mkdir /app/outbox && chown lifeline:lifeline /app/outbox
USER lifeline

EXPOSE 8000
ENTRYPOINT ["lifeline"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
