# The Terraform half of benches/aws-terraform.sh: the same resources `gantry up` creates for a
# one-pool cluster with `readiness: api` — N tagged EC2 instances, one security group (SSH from
# the caller only) and one imported key pair — against moto on 127.0.0.1 (never real AWS: every
# endpoint is given, credentials are dummies, no metadata or account lookups).

terraform {
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "5.100.0"
    }
  }
}

variable "endpoint" {
  type        = string
  description = "moto's URL, e.g. http://127.0.0.1:5000"
}

variable "instance_count" {
  type = number
}

variable "cluster" {
  type    = string
  default = "tfbench"
}

variable "ami" {
  type = string
}

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

variable "public_key" {
  type = string
}

variable "caller_cidr" {
  type    = string
  default = "127.0.0.1/32"
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true

  endpoints {
    ec2 = var.endpoint
    sts = var.endpoint
    iam = var.endpoint
  }
}

locals {
  tags = {
    "gantry-project" = "default"
    "gantry-cluster" = var.cluster
  }
}

resource "aws_key_pair" "cluster" {
  key_name   = "gantry-default-${var.cluster}"
  public_key = var.public_key
  tags       = local.tags
}

resource "aws_security_group" "cluster" {
  name        = "gantry-default-${var.cluster}"
  description = "gantry cluster ${var.cluster}"
  tags        = local.tags

  ingress {
    description = "ssh from the caller"
    from_port   = 22
    to_port     = 22
    protocol    = "tcp"
    cidr_blocks = [var.caller_cidr]
  }

  # EC2's default egress rule, stated (Terraform removes it otherwise).
  egress {
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_instance" "node" {
  count                  = var.instance_count
  ami                    = var.ami
  instance_type          = var.instance_type
  key_name               = aws_key_pair.cluster.key_name
  vpc_security_group_ids = [aws_security_group.cluster.id]

  tags = merge(local.tags, {
    "Name"        = "${var.cluster}-db-${count.index + 1}"
    "gantry-pool" = "db"
    "gantry-node" = "${var.cluster}-db-${count.index + 1}"
  })
  volume_tags = local.tags
}
