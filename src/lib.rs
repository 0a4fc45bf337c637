//! secep: stand up a secure microservice topology on Amazon ECS (VPC, private subnets, Cloud Map, one security group
//! per service, Fargate) by calling AWS APIs directly.

pub mod aws;
pub mod commands;
pub mod config;
pub mod engine;
pub mod graph;
pub mod model;
pub mod output;
pub mod resource;
pub mod state;
