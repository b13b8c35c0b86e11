"""Idempotently create the maas DynamoDB table and S3 bucket on a local endpoint.

Run by localstack/up with the venv's python (boto3 comes with moto).
Settings come from the environment: AWS_ENDPOINT_URL, AWS_REGION, MAAS_TABLE,
MAAS_BUCKET. Credentials are always the static test/test pair.
Messages go to stderr.
"""

import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ENDPOINT = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
REGION = os.environ.get("AWS_REGION", "us-east-1")
TABLE = os.environ.get("MAAS_TABLE", "maas")
BUCKET = os.environ.get("MAAS_BUCKET", "maas-blobs")
TTL_ATTR = "ttl"
GSI = "gsi1"


def log(msg):
    print(f"provision: {msg}", file=sys.stderr, flush=True)


def client(service):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"max_attempts": 10, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def ensure_table(ddb):
    try:
        desc = ddb.describe_table(TableName=TABLE)["Table"]
        log(f"table {TABLE} exists; leaving it")
        gsis = {g["IndexName"] for g in desc.get("GlobalSecondaryIndexes", [])}
        if GSI not in gsis:
            log(f"WARNING: existing table {TABLE} has no index {GSI}")
    except ClientError as e:
        if e.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        ddb.create_table(
            TableName=TABLE,
            AttributeDefinitions=[
                {"AttributeName": n, "AttributeType": "S"}
                for n in ("pk", "sk", "gsi1pk", "gsi1sk")
            ],
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": GSI,
                    "KeySchema": [
                        {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                        {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        log(f"created table {TABLE}")
    ddb.get_waiter("table_exists").wait(
        TableName=TABLE, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )

    ttl = ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    status = ttl.get("TimeToLiveStatus")
    attr = ttl.get("AttributeName")
    if status in ("ENABLED", "ENABLING") and attr == TTL_ATTR:
        log(f"TTL already enabled on '{TTL_ATTR}'")
    elif status in ("ENABLED", "ENABLING"):
        log(f"WARNING: TTL is enabled on '{attr}', not '{TTL_ATTR}'; leaving it")
    else:
        ddb.update_time_to_live(
            TableName=TABLE,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTR},
        )
        log(f"enabled TTL on '{TTL_ATTR}'")


def ensure_bucket(s3):
    try:
        s3.head_bucket(Bucket=BUCKET)
        log(f"bucket {BUCKET} exists")
        return
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("404", "NoSuchBucket", "NotFound"):
            raise
    try:
        # us-east-1 takes no LocationConstraint.
        if REGION == "us-east-1":
            s3.create_bucket(Bucket=BUCKET)
        else:
            s3.create_bucket(
                Bucket=BUCKET,
                CreateBucketConfiguration={"LocationConstraint": REGION},
            )
        log(f"created bucket {BUCKET}")
    except ClientError as e:
        if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise
        log(f"bucket {BUCKET} exists")


def main():
    try:
        ensure_table(client("dynamodb"))
        ensure_bucket(client("s3"))
    except (ClientError, BotoCoreError) as e:
        log(f"ERROR: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
