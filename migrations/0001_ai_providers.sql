CREATE TABLE `ai_providers` (
	`id` text PRIMARY KEY NOT NULL,
	`base_url` text NOT NULL,
	`api_key_sealed` text NOT NULL,
	`default_model` text NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	`updated_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL
);
--> statement-breakpoint
CREATE TABLE `failure_explanations` (
	`deployment_id` text NOT NULL,
	`provider_id` text NOT NULL,
	`model` text NOT NULL,
	`explanation` text NOT NULL,
	`created_at` text DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) NOT NULL,
	PRIMARY KEY(`deployment_id`, `provider_id`, `model`),
	FOREIGN KEY (`deployment_id`) REFERENCES `deployments`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`provider_id`) REFERENCES `ai_providers`(`id`) ON UPDATE no action ON DELETE cascade
);
